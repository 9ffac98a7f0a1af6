"""trainwell.explain (planned family; see README's feature table)."""
