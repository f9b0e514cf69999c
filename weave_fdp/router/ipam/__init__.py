"""router/ipam"""
