"""trainwell.nn (planned family; see README's feature table)."""
