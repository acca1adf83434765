#include "common/error.h"

namespace hc {

std::string_view ErrorCodeName(ErrorCode code) {
  switch (code) {
    case ErrorCode::kInvalidArgument: return "invalid-argument";
    case ErrorCode::kNotFound: return "not-found";
    case ErrorCode::kAlreadyExists: return "already-exists";
    case ErrorCode::kConflict: return "conflict";
    case ErrorCode::kFailedPrecondition: return "failed-precondition";
    case ErrorCode::kUnavailable: return "unavailable";
    case ErrorCode::kUnauthenticated: return "unauthenticated";
    case ErrorCode::kIOError: return "io-error";
    case ErrorCode::kInternal: return "internal";
  }
  return "internal";
}

Error Annotate(Error e, std::string_view context) {
  e.message = std::string(context) + ": " + e.message;
  return e;
}

}  // namespace hc
