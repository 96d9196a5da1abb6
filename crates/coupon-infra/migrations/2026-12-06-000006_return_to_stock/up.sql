-- A revocation may put the unit back into stock (`returnToStock`): the row
-- stays, REVOKED, and says so; the coupon's remaining quantity grows by one.
-- So remaining_quantity = total_quantity - rows + rows whose stock returned.
ALTER TABLE customer_coupon ADD COLUMN stock_returned BOOLEAN NOT NULL DEFAULT false;
ALTER TABLE customer_coupon
    ADD CONSTRAINT customer_coupon_returned_if_revoked CHECK (NOT stock_returned OR status = 'REVOKED') NOT VALID;
ALTER TABLE customer_coupon VALIDATE CONSTRAINT customer_coupon_returned_if_revoked;
