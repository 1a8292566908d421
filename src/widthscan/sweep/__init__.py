"""widthscan.sweep"""
