-- Issue 12: the audit trail. One row per state-changing call (lab_common::audit), written in
-- the same transaction as the change where there is one. Append-only for every role, the
-- service's own included: the triggers below refuse UPDATE, DELETE and TRUNCATE (statement
-- level, so even a statement matching no row is refused), and PUBLIC holds no such privilege.
-- Only the table's owner can drop the triggers; in production the service connects as a role
-- that does not own it (docs/decisions.md, "Audit trail"). Retention is a DBA's archive-and-drop
-- job, never the service's.
-- The same table exists in approval-svc's database (migrations/approval, same name).
CREATE TABLE audit_events (
    event_id uuid PRIMARY KEY,
    at timestamptz NOT NULL DEFAULT clock_timestamp(),
    actor text NOT NULL,
    action text NOT NULL,
    target_id text NOT NULL,
    outcome text NOT NULL,
    request_id text NOT NULL
);

-- ListAuditEvents filters by actor or target and pages by event_id.
CREATE INDEX audit_events_by_actor ON audit_events (actor, event_id);
CREATE INDEX audit_events_by_target ON audit_events (target_id, event_id);

CREATE FUNCTION audit_events_refuse_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_events is append-only: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;

CREATE TRIGGER audit_events_append_only
    BEFORE UPDATE OR DELETE OR TRUNCATE ON audit_events
    FOR EACH STATEMENT EXECUTE FUNCTION audit_events_refuse_change();

REVOKE UPDATE, DELETE, TRUNCATE ON audit_events FROM PUBLIC;
