--! Previous: sha1:8594c3f107cf217f471b65ed49b53445f5204319
--! Hash: sha1:bff076a5eca0a3fa6af4f1653f536a55d951f7e2
--! Message: erased-order-id-leaves-finished-retraction

--! split: 1-current.sql
/*
 * An erased subject's order id leaves the retraction once Google has it.
 *
 * A CRM may use the subject itself (an email, a phone number) as a sale's order id. Erasure
 * replaces such ids everywhere except on a retraction still waiting to go: Google needs the
 * order id to know which conversion to withdraw. Nothing replaced it afterwards, so once the
 * retraction was delivered the subject's email stayed in the queue for good, behind a completed
 * erasure receipt. Now a retraction reaching its final state (accepted, failed or cancelled)
 * whose sale's order id was erased (sales.external_id = 'erased:' || id) takes the erased form
 * too, in the same write.
 */
create or replace function app_private.tg_offline_conversion_queue__forget_erased_order_id() returns trigger
  language plpgsql
  set search_path to pg_catalog, public, pg_temp
as $$
begin
  if exists (select 1 from app_public.sales s
              where s.site_id = new.site_id and s.id = new.sale_id and s.external_id = 'erased:' || s.id::text) then
    new.order_id := 'erased:' || new.sale_id::text;
  end if;
  return new;
end;
$$;
comment on function app_private.tg_offline_conversion_queue__forget_erased_order_id() is
  E'Replaces a finished retraction''s order id when erasure replaced its sale''s (the id was the subject''s own data).';

drop trigger if exists _200_forget_erased_order_id on app_public.offline_conversion_queue;
-- The WHEN clause keeps the check off every other row an outcome writes (conversions, retractions still open).
create trigger _200_forget_erased_order_id before update of status on app_public.offline_conversion_queue
  for each row when (new.kind = 'retraction' and new.status in ('accepted', 'failed', 'cancelled')
                     and new.order_id is distinct from 'erased:' || new.sale_id::text)
  execute function app_private.tg_offline_conversion_queue__forget_erased_order_id();
