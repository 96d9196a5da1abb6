-- A redeem or revoke that comes before coupon-writer writes the customer's
-- row itself, stamped with coupon-api's clock: the issuance's own time is in
-- its event, which Redis no longer holds once Kafka has it. The flag marks
-- that estimate; coupon-writer replaces it with the event's time when it
-- applies the event, and counts nothing for it.
ALTER TABLE customer_coupon ADD COLUMN issued_at_estimated BOOLEAN NOT NULL DEFAULT false;
