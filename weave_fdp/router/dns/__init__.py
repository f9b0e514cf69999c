"""router/dns"""
