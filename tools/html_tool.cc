// compress_html_tool IN.json OUT.html: writes the HTML page of a JSON report (schema compress.report/1) or
// of a compare/auto document (schema compress.compare/1), chosen by the document's "schema" field.
// Exit status as compress's: 2 usage, 3 a document that is not one of the two, 4 a file that cannot be
// read or written.
#include <iostream>
#include <string>

#include <nlohmann/json.hpp>

#include "compress/report/html.h"
#include "compress/util/error.h"
#include "compress/util/fs.h"

int main(int argc, char** argv) {
  using compress::Error;
  using compress::ErrorKind;
  compress::InstallSignalCleanup();
  if (argc != 3) {
    std::cerr << "usage: compress_html_tool IN.json OUT.html\n";
    return static_cast<int>(ErrorKind::kUsage);
  }
  const std::string in = argv[1], out = argv[2];
  try {
    const std::string text = compress::ReadFileBytes(in, size_t{1} << 30);
    nlohmann::json doc;
    try {
      doc = nlohmann::json::parse(text);
    } catch (const nlohmann::json::exception& e) {
      compress::ThrowInvalid(in + ": not JSON: " + e.what());
    }
    const std::string schema = doc.is_object() && doc.contains("schema") && doc["schema"].is_string()
                                   ? doc["schema"].get<std::string>()
                                   : std::string();
    std::string html;
    if (schema == "compress.report/1") {
      html = compress::FormatReportHtml(doc);
    } else if (schema == "compress.compare/1") {
      html = compress::FormatCompareHtml(doc);
    } else {
      compress::ThrowInvalid(in + ": schema \"" + schema +
                             "\" is neither compress.report/1 nor compress.compare/1");
    }
    compress::WriteFileAtomic(out, html);
  } catch (const Error& e) {
    std::cerr << "compress_html_tool: " << e.what() << "\n";
    return e.exit_code();
  }
  return 0;
}
