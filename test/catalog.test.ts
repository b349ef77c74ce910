/*
 * Invariants that hold for every object in our schemas, checked from the catalog so that a
 * table or function added later cannot forget them.
 */
import { getRootPool } from "./helpers/db";

const OUR_SCHEMAS = ["app_public", "app_hidden", "app_private"];

async function rows<T = Record<string, unknown>>(sql: string, params: unknown[] = []): Promise<T[]> {
  return (await getRootPool().query(sql, params)).rows as T[];
}

describe("catalog invariants", () => {
  test("row-level security is enabled on every table, partitioned parents included", async () => {
    const tables = await rows<{ name: string; rls: boolean }>(
      `select n.nspname || '.' || c.relname as name, c.relrowsecurity as rls
         from pg_class c join pg_namespace n on n.oid = c.relnamespace
        where n.nspname = any($1) and c.relkind in ('r', 'p')`, [OUR_SCHEMAS]);
    expect(tables.length).toBeGreaterThan(5);
    expect(tables.filter((t) => !t.rls).map((t) => t.name)).toEqual([]);
  });

  test("every security definer function pins search_path", async () => {
    const functions = await rows<{ name: string; config: string[] | null }>(
      `select p.oid::regprocedure::text as name, p.proconfig as config
         from pg_proc p join pg_namespace n on n.oid = p.pronamespace
        where n.nspname = any($1) and p.prosecdef`, [OUR_SCHEMAS]);
    expect(functions.length).toBeGreaterThan(3);
    const unpinned = functions.filter((f) => !(f.config ?? []).some((c) => /^search_path=pg_catalog, public, pg_temp$/.test(c)));
    expect(unpinned.map((f) => f.name)).toEqual([]);
  });

  test("site_id leads the primary key of every table that has one", async () => {
    const tables = await rows<{ name: string; first_key_column: string | null }>(
      `select n.nspname || '.' || c.relname as name,
              (select a.attname from pg_constraint k join pg_attribute a on a.attrelid = k.conrelid and a.attnum = k.conkey[1]
                where k.conrelid = c.oid and k.contype = 'p') as first_key_column
         from pg_class c join pg_namespace n on n.oid = c.relnamespace
        where n.nspname = any($1) and c.relkind in ('r', 'p') and not c.relispartition
          and exists (select 1 from pg_attribute a where a.attrelid = c.oid and a.attname = 'site_id' and not a.attisdropped)`,
      [OUR_SCHEMAS]);
    expect(tables.length).toBeGreaterThan(3);
    expect(tables.filter((t) => t.first_key_column !== "site_id")).toEqual([]);
  });

  test("every column a policy reads is indexed, led by a policy column", async () => {
    // Columns named in each policy's expressions, and every index as its ordered column list.
    const policies = await rows<{ table_name: string; policy: string; columns: string[] }>(
      `select c.oid::regclass::text as table_name, p.polname as policy,
              array(select distinct a.attname from pg_attribute a
                     where a.attrelid = c.oid and a.attnum > 0
                       and (pg_get_expr(p.polqual, c.oid) ~ ('\\m' || a.attname || '\\M')
                            or pg_get_expr(p.polwithcheck, c.oid) ~ ('\\m' || a.attname || '\\M')))::text[] as columns
         from pg_policy p join pg_class c on c.oid = p.polrelid join pg_namespace n on n.oid = c.relnamespace
        where n.nspname = any($1)`, [OUR_SCHEMAS]);
    expect(policies.length).toBeGreaterThan(5);
    const indexes = await rows<{ table_name: string; columns: string[] }>(
      `select i.indrelid::regclass::text as table_name,
              array(select a.attname from unnest(i.indkey) with ordinality k(attnum, pos)
                      join pg_attribute a on a.attrelid = i.indrelid and a.attnum = k.attnum order by k.pos)::text[] as columns
         from pg_index i`);
    // A column passes when it leads an index, or sits in an index led by another column of the
    // same policy (site_members (site_id, role) serves "site_id in (...) and role < 'admin'").
    const covered = (table: string, column: string, policyColumns: string[]) =>
      indexes.some((i) => i.table_name === table && (i.columns[0] === column || (policyColumns.includes(i.columns[0]) && i.columns.includes(column))));
    const missing = policies.flatMap((p) =>
      p.columns.filter((c) => !covered(p.table_name, c, p.columns)).map((c) => `${p.table_name}.${c} (${p.policy})`));
    expect(missing).toEqual([]);
  });

  test("every table, column and function in app_public is documented", async () => {
    const undocumented = await rows<{ name: string }>(
      `select 'table ' || c.relname as name from pg_class c join pg_namespace n on n.oid = c.relnamespace
        where n.nspname = 'app_public' and c.relkind in ('r', 'p') and not c.relispartition and obj_description(c.oid, 'pg_class') is null
       union all
       select 'column ' || c.relname || '.' || a.attname from pg_attribute a join pg_class c on c.oid = a.attrelid
         join pg_namespace n on n.oid = c.relnamespace
        where n.nspname = 'app_public' and c.relkind in ('r', 'p') and not c.relispartition and a.attnum > 0 and not a.attisdropped
          and col_description(c.oid, a.attnum) is null
       union all
       select 'function ' || p.oid::regprocedure::text from pg_proc p join pg_namespace n on n.oid = p.pronamespace
        where n.nspname in ('app_public', 'app_hidden', 'app_private') and obj_description(p.oid, 'pg_proc') is null`);
    expect(undocumented.map((u) => u.name)).toEqual([]);
  });

  test("no client role can read app_private", async () => {
    const grants = await rows<{ grantee: string; object: string }>(
      `select r.rolname as grantee, c.relname as object from pg_class c join pg_namespace n on n.oid = c.relnamespace
         cross join (values ('opsmantik_visitor'), ('opsmantik_authenticator')) as r(rolname)
        where n.nspname = 'app_private' and c.relkind in ('r', 'p', 'v')
          and has_table_privilege(r.rolname, c.oid, 'select')`);
    expect(grants).toEqual([]);
  });
});
