DROP INDEX items_created_at;
