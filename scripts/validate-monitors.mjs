// Validates every ServiceMonitor and PodMonitor in a YAML file against the Prometheus
// Operator's CRD schemas (@kubernetes-models/prometheus-operator); exits 1 on the first
// invalid one, naming it. Run by scripts/validate-manifests (which sets where the modules
// are: an ES module resolves bare names from its own directory only, so they are imported
// by path).
import fs from "fs";
import path from "path";
import { pathToFileURL } from "url";

const modules = process.env.KSIGHT_NODE_MODULES;
const load = (name, file) => import(pathToFileURL(path.join(modules, name, file)).href);
const yaml = (await load("js-yaml", "index.js")).default;
const v1 = await load("@kubernetes-models/prometheus-operator", "monitoring.coreos.com/v1/index.js");

let checked = 0;
for (const doc of yaml.loadAll(fs.readFileSync(process.argv[2], "utf8"))) {
  if (!doc) continue;
  const Kind = v1[doc.kind];
  if (!Kind) {
    console.error(`validate-monitors: unexpected kind ${doc.kind}`);
    process.exit(1);
  }
  try {
    new Kind(doc).validate();
  } catch (err) {
    console.error(`validate-monitors: ${doc.kind} ${doc.metadata.name}: ${err.message}`);
    process.exit(1);
  }
  checked += 1;
  console.log(`${doc.kind} ${doc.metadata.name}: valid`);
}
if (checked === 0) {
  console.error("validate-monitors: no monitor found");
  process.exit(1);
}
