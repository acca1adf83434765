#include "manager/core/migration_gate.h"

namespace hc::core {

namespace {

class NoMigrations final : public MigrationGate {
 public:
  bool Migrating(const std::string&) const override { return false; }
};

}  // namespace

const MigrationGate& MigrationGate::None() {
  static const NoMigrations none;
  return none;
}

}  // namespace hc::core
