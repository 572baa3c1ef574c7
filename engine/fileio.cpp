// engine/fileio.cpp: POSIX implementation of fileio.h (open/write/fsync/rename).
#include "engine/fileio.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "engine/error.h"

namespace unetcu {
namespace {

std::string folder_of(const std::string& path) {
  size_t slash = path.find_last_of('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

// The rename is only durable once the folder entry itself reaches the disk. Some file systems
// refuse fsync on a folder; the data is already safe then, so failures here are ignored.
void sync_folder(const std::string& folder) {
  int fd = ::open(folder.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return;
  ::fsync(fd);
  ::close(fd);
}

}  // namespace

void write_file_atomic(const std::string& path, const void* data, size_t n) {
  write_file_atomic(path, std::vector<ByteRange>{{data, n}});
}

void write_file_atomic(const std::string& path, const std::vector<ByteRange>& pieces) {
  const std::string tmp = path + ".tmp." + std::to_string(::getpid());
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) fail("cannot write ", path, ": cannot create ", tmp, ": ", std::strerror(errno));

  // Any failure after the temporary exists removes it, keeping the folder clean.
  auto abandon = [&](const char* what) {
    int err = errno;
    ::close(fd);
    ::unlink(tmp.c_str());
    fail("cannot write ", path, ": ", what, ": ", std::strerror(err));
  };
  for (const ByteRange& piece : pieces) {
    const char* p = static_cast<const char*>(piece.data);
    size_t left = piece.n;
    while (left > 0) {
      ssize_t w = ::write(fd, p, left);
      if (w < 0) {
        if (errno == EINTR) continue;
        abandon("write failed");
      }
      p += w;
      left -= size_t(w);
    }
  }
  if (::fsync(fd) != 0) abandon("fsync failed");
  if (::close(fd) != 0) {
    int err = errno;
    ::unlink(tmp.c_str());
    fail("cannot write ", path, ": close failed: ", std::strerror(err));
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    int err = errno;
    ::unlink(tmp.c_str());
    fail("cannot write ", path, ": rename from ", tmp, " failed: ", std::strerror(err));
  }
  sync_folder(folder_of(path));
}

void write_file_atomic(const std::string& path, const std::string& bytes) {
  write_file_atomic(path, bytes.data(), bytes.size());
}

std::string read_file(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT) fail("cannot read ", path, ": no such file");
    fail("cannot read ", path, ": ", std::strerror(errno));
  }
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    int err = errno;
    ::close(fd);
    fail("cannot read ", path, ": ", std::strerror(err));
  }
  if (S_ISDIR(st.st_mode)) {
    ::close(fd);
    fail("cannot read ", path, ": is a directory");
  }

  // st_size is a hint only (pipes and /proc files report 0): fill that much in place, then
  // keep reading through a chunk until end of file without doubling a large buffer.
  std::string bytes(st.st_size > 0 ? size_t(st.st_size) : 0, '\0');
  size_t used = 0;
  char chunk[65536];
  for (;;) {
    bool in_place = used < bytes.size();
    char* dst = in_place ? &bytes[used] : chunk;
    size_t room = in_place ? bytes.size() - used : sizeof chunk;
    ssize_t r = ::read(fd, dst, room);
    if (r < 0) {
      if (errno == EINTR) continue;
      int err = errno;
      ::close(fd);
      fail("cannot read ", path, ": ", std::strerror(err));
    }
    if (r == 0) break;
    if (!in_place) bytes.append(chunk, size_t(r));
    used += size_t(r);
  }
  ::close(fd);
  bytes.resize(used);
  return bytes;
}

}  // namespace unetcu
