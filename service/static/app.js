// The lead browser: fetch a page of leads and show what it cost (from Server-Timing).
const form = document.getElementById("filters");
const body = document.querySelector("#leads tbody");
const timing = document.getElementById("timing");

function cell(text) {
  const td = document.createElement("td");
  td.textContent = text ?? "";
  return td;
}

function row(lead) {
  const tr = document.createElement("tr");
  tr.append(cell(lead.id), cell(lead.company), cell(lead.contact_name),
            cell(lead.owner ? lead.owner.name : "—"), cell(lead.status), cell(lead.score));
  const tags = document.createElement("td");
  for (const name of lead.tags) {
    const span = document.createElement("span");
    span.className = "tag";
    span.textContent = name;
    tags.append(span);
  }
  tr.append(tags);
  return tr;
}

async function load(event) {
  if (event) event.preventDefault();
  const params = new URLSearchParams(new FormData(form));
  if (!params.get("status")) params.delete("status");
  const started = performance.now();
  const response = await fetch(`/api/leads?${params}`);
  const elapsed = performance.now() - started;
  const data = await response.json();
  body.replaceChildren();
  if (!response.ok) {
    body.append(Object.assign(document.createElement("tr"), {innerHTML: ""}));
    body.firstChild.append(cell(data.error || `HTTP ${response.status}`));
    return;
  }
  if (data.leads.length === 0) {
    const tr = document.createElement("tr");
    const td = cell("No leads match these filters.");
    td.colSpan = 7;
    td.className = "empty";
    tr.append(td);
    body.append(tr);
  }
  for (const lead of data.leads) body.append(row(lead));
  const serverTiming = response.headers.get("Server-Timing") || "";
  const statements = /desc="(\d+) statements"/.exec(serverTiming);
  timing.textContent = `${data.leads.length} of ${data.total} leads · ${elapsed.toFixed(0)} ms` +
    (statements ? ` · ${statements[1]} SQL statements` : "");
}

form.addEventListener("submit", load);
load();
