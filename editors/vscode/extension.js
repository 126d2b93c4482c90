// The stageguard extension: the language (grammar, brackets, comments) and a client that
// starts `stageguard lsp`, which gives diagnostics, hover, completion, navigation, rename,
// formatting, fixes and code lenses (docs/editors.md in the stageguard repository).
"use strict";

const vscode = require("vscode");
const { LanguageClient, TransportKind } = require("vscode-languageclient/node");

let client;

function activate(context) {
  const config = vscode.workspace.getConfiguration("stageguard");
  const command = config.get("path") || "stageguard";
  const serverOptions = { command, args: ["lsp"], transport: TransportKind.stdio };
  const clientOptions = {
    documentSelector: [{ scheme: "file", language: "stageguard" }],
    initializationOptions: {
      debounce: config.get("debounce"),
      lint: config.get("lint"),
      registry: config.get("registry") || undefined,
    },
    synchronize: { fileEvents: vscode.workspace.createFileSystemWatcher("**/*.{sg,test.toml}") },
  };
  client = new LanguageClient("stageguard", "stageguard", serverOptions, clientOptions);
  context.subscriptions.push(
    vscode.commands.registerCommand("stageguard.restart", () => client.restart()));
  return client.start();
}

function deactivate() {
  return client ? client.stop() : undefined;
}

module.exports = { activate, deactivate };
