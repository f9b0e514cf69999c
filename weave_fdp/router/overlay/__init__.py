"""router/overlay"""
