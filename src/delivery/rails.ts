/* One client per rail per process, created on first use and sharing one OAuth token cache. */
import { DataManagerRail } from "../google/datamanager";
import { GoogleAdsRail } from "../google/google-ads";
import { AccessTokens } from "../google/oauth";
import type { GoogleSettings, Rail } from "../google/types";

export interface Rails {
  railFor(rail: Rail): DataManagerRail | GoogleAdsRail;
  close(): Promise<void>;
}

export function makeRails(settings: GoogleSettings): Rails {
  const tokens = new AccessTokens(settings);
  let dataManager: DataManagerRail | undefined;
  let googleAds: GoogleAdsRail | undefined;
  return {
    railFor(rail) {
      if (rail === "datamanager") return (dataManager ??= new DataManagerRail(settings, tokens));
      return (googleAds ??= new GoogleAdsRail(settings, tokens));
    },
    async close() {
      await Promise.all([dataManager?.close(), googleAds?.close()]);
      dataManager = googleAds = undefined;
    },
  };
}
