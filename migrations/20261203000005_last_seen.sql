-- When each user's last event stream closed (DESIGN §5's presence): shown
-- as "Active 5 min ago" to the other members of their ACTIVE DMs only.
ALTER TABLE users ADD COLUMN last_seen_at timestamptz;
