/*
 * Keeps V8's young generation from growing while the process starts up, and while a large
 * response streams through it (the dispute export).
 *
 * V8 grows the young generation (two semi-spaces) whenever enough objects survive its
 * scavenges, up to 2 × 16 MB on 64-bit Node, and gives that back only in a memory-reducing full
 * GC, which a server that has started never gets. Start-up makes tens of MB of objects that all
 * live on (the compiled modules, then PostGraphile's schema, built after the server listens),
 * so `serve` sat at 150-160 MB RSS at rest, 30 MB of it an almost empty young generation; held
 * during start-up, the same service rests at ~120 MB (start-up costs ~10% more CPU, ~0.2 s).
 * Streaming ~100 MB of COPY output makes ~1,000 scavenges, each with a little in flight, which
 * regrew it to 32 MB over a few exports. A young generation that large also lets tens of MB of
 * dead Buffers (socket reads, pg-copy-streams' chunks) wait for the next scavenge, as malloc'd
 * memory the process keeps afterwards: the export's peak RSS was ~30 MB above its resting RSS,
 * and ~10 MB with the hold.
 *
 * Only the growth is held, never shrunk: V8 reads --semi-space-growth-factor each time it
 * considers growing the young generation, so 1 means "stay as you are". When nothing holds it
 * any more, V8's default factor is back and the young generation is sized for the actual load,
 * as always. An operator's own semi-space flags (NODE_OPTIONS or the command line) are left
 * alone.
 */
import v8 from "node:v8";

const V8_DEFAULT_GROWTH_FACTOR = 2; // V8's own default for --semi-space-growth-factor
// Starting a worker thread (esbuild's, when tsx compiles a file that is not in its cache) puts
// the growth factor back to its default (seen on Node 20), from that thread and a moment later;
// so while held, it is set again this often.
const REASSERT_MS = 25;

const operatorTuned = /semi[-_]space/.test(`${process.execArgv.join(" ")} ${process.env.NODE_OPTIONS ?? ""}`);
let holds = 0;
let reassert: NodeJS.Timeout | undefined;

const setGrowthFactor = (factor: number) => v8.setFlagsFromString(`--semi-space-growth-factor=${factor}`);

/** Holds the young generation's size until the returned function is called (which is idempotent). */
export function holdYoungGeneration(): () => void {
  if (operatorTuned) return () => {};
  holds++;
  setGrowthFactor(1); // even when already held: a worker thread may have reset it meanwhile
  reassert ??= setInterval(() => setGrowthFactor(1), REASSERT_MS).unref();
  let released = false;
  return () => {
    if (released) return;
    released = true;
    if (--holds > 0) return;
    clearInterval(reassert);
    reassert = undefined;
    setGrowthFactor(V8_DEFAULT_GROWTH_FACTOR);
  };
}
