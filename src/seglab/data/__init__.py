"""Reading CVAT exports and turning them into batches."""
