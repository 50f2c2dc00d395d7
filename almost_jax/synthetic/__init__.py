"""ALMoST's synthetic-data jobs: queries, prompted responses, comparisons, RM-guided self-play."""
