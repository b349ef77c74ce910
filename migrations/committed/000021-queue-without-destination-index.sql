--! Previous: sha1:9f3b1ee2ebaa539ad0a301ed2ff9eb839c67e5f3
--! Hash: sha1:426d1477e527fa22a759b94a44cdebfa89f3afd0
--! Message: queue-without-destination-index

--! split: 1-current.sql
--! The queue's destination index goes; GraphQL keeps the destination's list of conversions.
--
-- Every queued conversion and every outcome wrote an entry into (site_id, destination_id). A
-- site has one live destination at a time, so that index picks out almost exactly the rows the
-- primary key's site_id prefix does: the destination's totals, its conversions in GraphQL and
-- the foreign key's ON DELETE read the same rows either way. The index stayed (000013) only
-- because PostGraphile offers a reverse relation, and conditions on a column, only when an index
-- backs them; the @isIndexed smart tags say the site prefix does, so the schema is unchanged.
comment on constraint offline_conversion_queue_destination_fkey on app_public.offline_conversion_queue is
  E'@isIndexed';
comment on column app_public.offline_conversion_queue.destination_id is
  E'@isIndexed\nThe destination it was last sent to.';
drop index if exists app_public.offline_conversion_queue_destination_idx;
