/*
 * PostGraphile 5's execution engine (grafast) calls Promise.withResolvers, which Node gained in
 * version 22. We run on Node 20 too, so supply the standard behaviour when it is missing.
 * Imported first by every entry point (CLI, tests).
 */
import { holdYoungGeneration } from "./young-generation";
interface Resolvers<T> {
  promise: Promise<T>;
  resolve: (value: T | PromiseLike<T>) => void;
  reject: (reason?: unknown) => void;
}

const PromiseWith = Promise as unknown as { withResolvers?: <T>() => Resolvers<T> };
if (typeof PromiseWith.withResolvers !== "function") {
  PromiseWith.withResolvers = function withResolvers<T>(): Resolvers<T> {
    let resolve!: Resolvers<T>["resolve"];
    let reject!: Resolvers<T>["reject"];
    const promise = new Promise<T>((res, rej) => {
      resolve = res;
      reject = rej;
    });
    return { promise, resolve, reject };
  };
}

// Not a polyfill, but this module is what every entry point loads first: the young generation
// is held while the modules load (synchronously, before the first macrotask). startService
// holds it again until PostGraphile's schema is built; other processes let go here.
const releaseAfterLoading = holdYoungGeneration();
setImmediate(releaseAfterLoading).unref();

export {};
