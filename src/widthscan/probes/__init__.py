"""widthscan.probes"""
