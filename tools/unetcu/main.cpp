// tools/unetcu/main.cpp: placeholder entry point until the CLI lands.
int main() { return 0; }
