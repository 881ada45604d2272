// Judging any system's batch output (this engine's, the managed service's, another one's) against
// held-out truth, with the same metrics and intervals as training's evaluation: how a team proves
// a migration. `tastebud evaluate` is its command line.
#pragma once

#include <filesystem>
#include <map>
#include <ostream>
#include <string>
#include <vector>

#include "host/evaluation.h"

namespace tastebud::host {

// A batch-infer output file in the service's layout: each line's input userId and its
// recommendedItems, in order. Lines of other queries (itemId) are counted, not used.
struct Predictions {
  std::filesystem::path path;
  std::map<std::string, std::vector<std::string>> by_user;
  uint64_t other_lines = 0;   // lines without a userId query
  uint64_t failed_lines = 0;  // lines whose output is null (an error): the user gets no list
};
// Throws tastebud::Error naming the file and line of a line that is not JSON or not that layout.
Predictions read_predictions(const std::filesystem::path& path);

// The held-out interactions: a CSV with USER_ID and ITEM_ID columns (any case, any other columns
// ignored), as the service's interactions export writes them. user -> its items.
std::map<std::string, std::vector<std::string>> read_truth(const std::filesystem::path& path);

struct OfflineEvalOptions {
  std::vector<std::filesystem::path> predictions;  // one system, or two for a paired comparison
  std::filesystem::path truth;
  // The dataset the systems were trained on (optional): its catalog for coverage, its
  // interactions for novelty and the share of cold items, its item metadata for diversity.
  std::filesystem::path data;
  BootstrapOptions bootstrap;
};

struct OfflineEvalReport {
  std::vector<Metrics> systems;  // one per predictions file
  Metrics paired;                // two files: the second minus the first, with intervals and p
  uint64_t truth_users = 0;
  std::vector<uint64_t> missing_users;  // per file: truth users with no list (scored as empty)
};

// Per truth user (sorted by id): precision, NDCG at 5/10/25, MRR@25 and, with a dataset, novelty
// (mean self-information -log2 of the item's share of users), diversity (mean pairwise 1 - Jaccard
// of the categorical metadata of the listed items) and cold share (listed items without
// interactions); catalog coverage over the dataset's items or, without one, every item named in
// the truth or the lists.
OfflineEvalReport evaluate_predictions(const OfflineEvalOptions& options);

// The report as the command prints it.
void print_report(const OfflineEvalOptions& options, const OfflineEvalReport& report, std::ostream& out);

}  // namespace tastebud::host
