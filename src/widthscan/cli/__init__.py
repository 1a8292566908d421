"""widthscan.cli"""
