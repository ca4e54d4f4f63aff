-- A member may mute an ACTIVE DM (DESIGN §4): its messages still count as
-- unread, but stay out of the tab title's count and raise no notification.
ALTER TABLE dm_members ADD COLUMN muted boolean NOT NULL DEFAULT false;
