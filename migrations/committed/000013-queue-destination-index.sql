--! Previous: sha1:71bed758f185b709a44489409052c308d1bb7189
--! Hash: sha1:63b3f9eb755f41a987fcd833a3f648d12d6143b2
--! Message: queue-destination-index

--! split: 1-current.sql
--! Conversions by destination and status stay queryable.
--
-- 000012 dropped this index to save a write per status change, but PostGraphile offers
-- conditions, filters, ordering and the destination's list of conversions only on indexed
-- columns, so the dashboard lost "this destination's failed conversions". It comes back.
create index if not exists offline_conversion_queue_destination_idx
  on app_public.offline_conversion_queue (site_id, destination_id, status);
