"""widthscan.report"""
