"""datapath/sleeve"""
