"""lash_nb"""
