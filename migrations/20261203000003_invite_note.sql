-- The note an inviter may send with an invite (DESIGN §4): at most 200
-- characters, kept only while the DM is INVITED (an answer clears it).
ALTER TABLE dms ADD COLUMN invite_note text;
ALTER TABLE dms ADD CONSTRAINT dms_invite_note_length
    CHECK (char_length(invite_note) BETWEEN 1 AND 200);
ALTER TABLE dms ADD CONSTRAINT dms_invite_note_only_while_invited
    CHECK (invite_note IS NULL OR status = 'INVITED');
