// Error values shared by every module of hostcached and hostcachectl.
//
// Functions that can fail return Result<T> (tl::expected<T, Error>) or
// Status (Result<void>); exceptions never cross a module boundary.  The codes
// follow LevelDB's Status; manager/http maps them to HTTP statuses in one
// place (HttpStatusFor).
//
// Thread-safety: plain values, safe to copy between threads.
#pragma once

#include <string>
#include <string_view>
#include <utility>

#include <tl/expected.hpp>

namespace hc {

enum class ErrorCode {
  kInvalidArgument,     // the caller's input is wrong; nothing changed
  kNotFound,            // the named thing does not exist
  kAlreadyExists,       // a thing with that name exists already
  kConflict,            // the request contradicts current state (in use, budget)
  kFailedPrecondition,  // the system is not in a state where this can work
  kUnavailable,         // a dependency (libvirtd, QEMU) cannot be reached now
  kUnauthenticated,     // no or wrong credentials
  kIOError,             // file system or database failure
  kInternal,            // a bug or an unexpected answer from a dependency
};

struct Error {
  ErrorCode code;
  std::string message;  // a sentence a person can act on
};

template <typename T>
using Result = tl::expected<T, Error>;
using Status = Result<void>;

inline tl::unexpected<Error> Fail(ErrorCode code, std::string message) {
  return tl::unexpected<Error>(Error{code, std::move(message)});
}

// Stable machine-readable name of a code ("not-found", ...).
std::string_view ErrorCodeName(ErrorCode code);

// Prefix the message of `e` with `context` ("reading policy x: " + ...).
Error Annotate(Error e, std::string_view context);

}  // namespace hc
