"""widthscan.config"""
