"""What scoring reads besides the predictions and the data's own columns: `ids` places any
id,value file on the data's rows (RowIds, numerai_id_keys); `side_files` reads the version
folder's meta model, example predictions and benchmark models through it. Below the stages:
validate uses both, and any stage that scores rows may."""
