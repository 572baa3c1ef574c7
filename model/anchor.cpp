// model/anchor.cpp: placeholder until the model sources land.
