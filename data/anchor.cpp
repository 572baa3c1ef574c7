// data/anchor.cpp: placeholder until the data sources land.
