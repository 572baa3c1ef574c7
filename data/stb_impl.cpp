// data/stb_impl.cpp: the one translation unit that compiles stb_image and stb_image_write.
// Only the formats the data layouts use (JPEG, PNG, BMP) are decoded, which keeps the library small;
// failure reasons are stb's short user-facing ones ("Corrupt JPEG"), which read_image prefixes
// with the file name.
#define STB_IMAGE_IMPLEMENTATION
#define STBI_ONLY_JPEG
#define STBI_ONLY_PNG
#define STBI_ONLY_BMP
#define STBI_FAILURE_USERMSG
#include <stb_image.h>

#define STB_IMAGE_WRITE_IMPLEMENTATION
#include <stb_image_write.h>
