"""router/mesh"""
