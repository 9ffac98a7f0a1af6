"""trainwell.seq2seq (planned family; see README's feature table)."""
