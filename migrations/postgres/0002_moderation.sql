-- What the operator decided through the NIP-86 management API: banned and allowed pubkeys, banned events, and the
-- relay's name and description. `list` names the list; `value` is a hex pubkey or id, or the text.
CREATE TABLE moderation (
    list   TEXT NOT NULL,
    value  TEXT NOT NULL,
    reason TEXT NOT NULL,
    PRIMARY KEY (list, value)
);
