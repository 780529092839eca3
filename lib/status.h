// Status: the result of an operation that can fail, as a value.
//
// Modelled on leveldb's Status: cheap when OK (no allocation), carries an
// errno and a message otherwise. Functions of the core return Status instead
// of throwing, so nothing needs catching at the C boundary on the normal path.
//
// Thread contract: a value type; one instance is not shared between threads.
#ifndef ABORTGUARD_STATUS_H
#define ABORTGUARD_STATUS_H

#include <string>
#include <utility>

namespace abortguard {

class Status {
  public:
    Status() noexcept = default;
    static Status ok() noexcept { return Status(); }
    // An error from errno-style code `err` while doing `what`.
    static Status from_errno(int err, std::string what) {
        return Status(err == 0 ? -1 : err, std::move(what));
    }

    bool is_ok() const noexcept { return code_ == 0; }
    // The errno value (or -1 for an error without one); 0 when OK.
    int code() const noexcept { return code_; }
    // "what: strerror(code)", or "OK".
    std::string to_string() const;

  private:
    Status(int code, std::string what) : code_(code), what_(std::move(what)) {}

    int code_ = 0;
    std::string what_;
};

}  // namespace abortguard

#endif  // ABORTGUARD_STATUS_H
