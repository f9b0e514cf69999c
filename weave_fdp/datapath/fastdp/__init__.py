"""datapath/fastdp"""
