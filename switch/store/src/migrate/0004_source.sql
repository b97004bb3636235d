-- Schema version 4: where a call came from (transport and address of leg A's INVITE): who
-- called through the switch, for fraud and abuse reports.
ALTER TABLE cdr ADD COLUMN source TEXT;
