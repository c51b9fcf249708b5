-- Notification delivery: each outbox row is one message to one recipient
-- on one channel, retried on its own until delivered or dead-lettered.
--   state          pending | delivered | failed (dead letter)
--   kind           what caused it: welcome | alert
--   claimed_until  lease of the coordinator delivering it right now; a
--                  crashed coordinator's lease runs out and another (or the
--                  restarted one) delivers the row
ALTER TABLE outbox ADD COLUMN state TEXT NOT NULL DEFAULT 'pending';
ALTER TABLE outbox ADD COLUMN kind TEXT NOT NULL DEFAULT 'welcome';
ALTER TABLE outbox ADD COLUMN failed_at TIMESTAMPTZ;
ALTER TABLE outbox ADD COLUMN claimed_until TIMESTAMPTZ;
UPDATE outbox SET state = 'delivered' WHERE delivered_at IS NOT NULL;

DROP INDEX outbox_pending;
CREATE INDEX outbox_due ON outbox (next_attempt_at) WHERE state = 'pending';
CREATE INDEX outbox_by_state ON outbox (state, id);

-- A tenant's own notification channels. The webhook (URL and signing
-- secret) and the Slack incoming-webhook URL (which embeds a token) are
-- sealed; `display` is the redacted view the API and history show.
-- `emails` is a JSON list, NULL for the default (the tenant admin).
CREATE TABLE tenant_notification_channels (
    tenant_id      TEXT PRIMARY KEY NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    emails         TEXT,
    sealed_webhook TEXT,
    sealed_slack   TEXT,
    display        TEXT NOT NULL,
    updated_at     TIMESTAMPTZ NOT NULL
);

-- Every tenant has its row from provisioning on: the defaults for those
-- provisioned before this migration.
INSERT INTO tenant_notification_channels (tenant_id, display, updated_at)
SELECT id, '{"emails":null,"slackWebhookUrl":null,"webhookSecretSet":false,"webhookUrl":null}', created_at
FROM tenants;
