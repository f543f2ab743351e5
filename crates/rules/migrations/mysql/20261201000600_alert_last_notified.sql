-- When the alert's last "opened"/"retriggered" notification went out, so a restarted
-- engine keeps honouring the rule's cooldown per (rule, device).
ALTER TABLE alerts ADD COLUMN last_notified_at BIGINT NULL;
