#!/usr/bin/env node
// npr command-line entry. The CLI is TypeScript run directly by Node's type stripping,
// which needs Node >= 22.18; `npm install` brings Node 24 as a devDependency and
// `npx npr` / `npm run` put it first on PATH.
const [major, minor] = process.versions.node.split(".").map(Number);
if (major < 22 || (major === 22 && minor < 18)) {
  console.error(
    `npr: Node ${process.versions.node} cannot run TypeScript sources; Node >= 22.18 is required.\n` +
      `HINT: run 'npm install' in the npr checkout, then 'npx npr ...' (uses the pinned Node 24).`,
  );
  process.exit(1);
}
await import("../src/cli/main.ts");
