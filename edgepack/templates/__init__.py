"""Files copied into a package as they are (run.py runs on the device, with no edgepack import)."""
