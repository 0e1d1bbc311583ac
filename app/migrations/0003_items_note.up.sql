-- xtask: additive
-- A nullable column with no default: releases built before it never name it,
-- and the table is not rewritten, so it takes no long lock.
ALTER TABLE items ADD COLUMN note text;
