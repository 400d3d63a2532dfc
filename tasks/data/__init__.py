"""Receipt data: sources that write raw snapshots, the gt_parse JSON format, the versioned dataset."""
