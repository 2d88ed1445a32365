// The chat page: one websocket (ws/chat/), answers streamed into the thread, citations that open
// their passage, votes on answers and citations. Plain JS, no build step.
(function () {
  "use strict";

  var config = JSON.parse(document.getElementById("chat-config").textContent);
  var initialThread = JSON.parse(document.getElementById("chat-thread").textContent);
  var thread = document.getElementById("thread");
  var welcome = document.getElementById("welcome");
  var form = document.getElementById("composer");
  var input = document.getElementById("question");
  var sendButton = document.getElementById("send");
  var statusLine = document.getElementById("status");
  var conversationList = document.getElementById("conversation-list");
  var sidebarToggle = document.getElementById("sidebar-toggle");

  var conversation = config.conversation;
  var socket = null;
  var retries = 0;
  var pending = null; // the exchange being answered: {root, textEl, question}

  // Thumb icons: Feather icons (MIT licence), drawn as strokes.
  var ICONS = {
    up: '<svg viewBox="0 0 24 24" aria-hidden="true"><path d="M14 9V5a3 3 0 0 0-3-3l-4 9v11h11.28a2 2 0 0 0 2-1.7l1.38-9a2 2 0 0 0-2-2.3zM7 22H4a2 2 0 0 1-2-2v-7a2 2 0 0 1 2-2h3"/></svg>',
    down: '<svg viewBox="0 0 24 24" aria-hidden="true"><path d="M10 15v4a3 3 0 0 0 3 3l4-9V2H5.72a2 2 0 0 0-2 1.7l-1.38 9a2 2 0 0 0 2 2.3zm7-13h2.67A2.31 2.31 0 0 1 22 4v7a2.31 2.31 0 0 1-2.33 2H17"/></svg>'
  };
  var REASONS = [["outdated", "Outdated"], ["wrong_source", "Wrong source"], ["incomplete", "Incomplete"], ["other", "Other"]];

  function el(tag, attrs, children) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (name) {
      if (name === "text") node.textContent = attrs.text;
      else if (name === "html") node.innerHTML = attrs.html; // only for the constant icons above
      else if (attrs[name] !== null && attrs[name] !== undefined && attrs[name] !== false) node.setAttribute(name, attrs[name]);
    });
    (children || []).forEach(function (child) { if (child) node.appendChild(child); });
    return node;
  }

  function setStatus(text, isError) {
    statusLine.textContent = text || "";
    statusLine.classList.toggle("error", !!isError);
  }

  function scrollToEnd() {
    thread.scrollTop = thread.scrollHeight;
  }

  // --- Rendering ----------------------------------------------------------------------------
  function renderAnswerText(target, text, citations, messageId) {
    var known = {};
    (citations || []).forEach(function (c) { known[c.n] = c; });
    target.textContent = "";
    text.split(/(\[\d+\])/).forEach(function (part) {
      var match = /^\[(\d+)\]$/.exec(part);
      if (match && known[match[1]]) {
        var n = match[1];
        var button = el("button", {type: "button", "class": "cite", "data-n": n, "aria-label": "Open source " + n,
                                   title: known[n].title || ("Source " + n), text: n});
        button.addEventListener("click", function () { openSource(messageId, n); });
        target.appendChild(button);
      } else if (part) {
        target.appendChild(document.createTextNode(part));
      }
    });
  }

  function voteButtons(messageId, chunkId, votes, label) {
    var key = chunkId || "answer";
    var group = el("span", {"class": "votes", role: "group", "aria-label": "Rate " + label});
    [[1, "up", "Helpful"], [-1, "down", "Not helpful"]].forEach(function (spec) {
      var button = el("button", {
        type: "button", "class": "vote vote-" + spec[1], html: ICONS[spec[1]],
        "data-message-id": messageId, "data-chunk-id": chunkId || "", "data-rating": spec[0],
        "aria-pressed": votes && votes[key] === spec[0] ? "true" : "false",
        "aria-label": spec[2] + " (" + label + ")", title: spec[2]
      });
      button.addEventListener("click", function () {
        sendFeedback({message_id: messageId, rating: spec[0], chunk_id: chunkId || null});
        if (!chunkId && spec[0] === -1) showReasons(messageId);
        if (spec[0] === -1) showComment(messageId, chunkId, chunkId ? group : exchangeFor(messageId).querySelector(".reasons") || group);
      });
      group.appendChild(button);
    });
    return group;
  }

  function showReasons(messageId) {
    var root = exchangeFor(messageId);
    if (!root) return;
    var row = root.querySelector(".reasons");
    if (row) { row.hidden = false; return; }
    row = el("div", {"class": "reasons", role: "group", "aria-label": "What was wrong?"},
             [el("span", {"class": "muted", text: "What was wrong?"})]);
    REASONS.forEach(function (reason) {
      var chip = el("button", {type: "button", "class": "chip", "data-reason": reason[0], text: reason[1]});
      chip.addEventListener("click", function () {
        var written = root.querySelector('.comment-box[data-target="answer"] textarea');
        sendFeedback({message_id: messageId, rating: -1, reason: reason[0],
                      comment: written && written.value.trim() ? written.value.trim() : null});
        row.querySelectorAll(".chip").forEach(function (c) { c.setAttribute("aria-pressed", c === chip ? "true" : "false"); });
      });
      row.appendChild(chip);
    });
    root.querySelector(".answer-actions").after(row);
  }

  function renderSources(messageId, citations, votes) {
    var list = el("ol", {"class": "sources", "aria-label": "Sources"});
    citations.forEach(function (c) {
      var details = el("details", {"class": "source", id: "source-" + messageId + "-" + c.n, "data-chunk-id": c.chunk_id}, [
        el("summary", {}, [el("span", {"class": "source-number", text: String(c.n)}), sourceLink(c),
                           c.page ? el("span", {"class": "source-page", text: "page " + c.page}) : null]),
        el("blockquote", {"class": "passage", text: c.text})
      ]);
      var item = el("li", {"data-n": c.n}, [details]);
      if (config.canVote) item.appendChild(voteButtons(messageId, c.chunk_id, votes, "source " + c.n));
      list.appendChild(item);
    });
    return list;
  }

  // Where a citation opens: a web source's page, or Freshet's document page with the passage
  // highlighted. Only those two kinds of address become links: a document's uri is data from its
  // source, and a "javascript:" one must never run in the reader's session.
  function sourceLink(c) {
    var title = c.title || ("Document " + c.document_id);
    var url = c.url || "";
    if (/^https?:\/\//i.test(url)) {
      return el("a", {href: url, target: "_blank", rel: "noopener noreferrer", "class": "source-title", text: title});
    }
    if (/^\/documents\/\d+\//.test(url)) return el("a", {href: url, "class": "source-title", text: title});
    return el("span", {"class": "source-title", text: title});
  }

  function renderRelated(related) {
    var list = el("ol", {"class": "related", "aria-label": "Possibly related"});
    related.forEach(function (c) {
      list.appendChild(el("li", {}, [sourceLink(c),
        c.page ? el("span", {"class": "source-page", text: "page " + c.page}) : null,
        el("blockquote", {"class": "passage", text: c.text})]));
    });
    return list;
  }

  // A thumbs-down can say why: a comment, stored with the vote, that reviewers turn into an
  // evaluation case.
  function showComment(messageId, chunkId, anchor) {
    var root = exchangeFor(messageId);
    if (!root) return;
    var key = chunkId || "answer";
    var box = root.querySelector('.comment-box[data-target="' + key + '"]');
    if (box) { box.hidden = false; box.querySelector("textarea").focus(); return; }
    var area = el("textarea", {maxlength: 2000, "aria-label": "What was wrong?",
                               placeholder: "What was wrong, or what should it have said? (optional)"});
    var sendIt = el("button", {type: "button", "class": "secondary comment-send", text: "Send"});
    var status = el("span", {"class": "muted comment-status", role: "status"});
    box = el("div", {"class": "comment-box", "data-target": key},
             [area, el("div", {"class": "row"}, [sendIt, status])]);
    sendIt.addEventListener("click", function () {
      var comment = area.value.trim();
      if (!comment) { area.focus(); return; }
      var reason = root.querySelector('.reasons .chip[aria-pressed="true"]');
      if (sendFeedback({message_id: messageId, rating: -1, chunk_id: chunkId || null, comment: comment,
                        reason: !chunkId && reason ? reason.dataset.reason : null})) {
        box.dataset.sent = "pending";
        status.textContent = "Sending…";
      }
    });
    anchor.after(box);
    area.focus();
  }

  function exchangeFor(messageId) {
    return thread.querySelector('.exchange[data-message-id="' + messageId + '"]');
  }

  function openSource(messageId, n) {
    var details = document.getElementById("source-" + messageId + "-" + n);
    if (!details) return;
    details.open = true;
    details.classList.add("flash");
    setTimeout(function () { details.classList.remove("flash"); }, 1200);
    details.scrollIntoView({block: "nearest", behavior: "smooth"});
  }

  function newExchange(question) {
    welcome.hidden = true;
    var textEl = el("div", {"class": "answer-text streaming"});
    var root = el("article", {"class": "exchange"}, [
      el("div", {"class": "question"}, [el("p", {text: question})]),
      el("div", {"class": "answer"}, [textEl])
    ]);
    thread.appendChild(root);
    return {root: root, textEl: textEl, question: question};
  }

  function completeExchange(state, data) {
    var root = state.root;
    root.dataset.messageId = data.message_id;
    root.dataset.question = data.question || state.question;
    state.textEl.classList.remove("streaming");
    renderAnswerText(state.textEl, data.text, data.citations, data.message_id);
    var answer = root.querySelector(".answer");
    if (data.notice) answer.appendChild(el("p", {"class": "notice", text: data.notice}));
    if (data.citations_inferred) {
      answer.appendChild(el("p", {"class": "muted inferred",
        text: "The model cited no passage; Freshet matched its sentences to the passages they repeat."}));
    }
    if (data.abstained) {
      root.classList.add("abstained");
      if (data.related && data.related.length) {
        answer.appendChild(el("p", {"class": "muted related-heading", text: "Possibly related:"}));
        answer.appendChild(renderRelated(data.related));
      }
    }
    var actions = el("div", {"class": "answer-actions"});
    if (config.canVote) actions.appendChild(voteButtons(data.message_id, null, data.votes, "answer"));
    if (data.citations && data.citations.length) {
      actions.appendChild(el("span", {"class": "muted source-count",
        text: data.citations.length + (data.citations.length === 1 ? " source" : " sources")}));
    }
    answer.appendChild(actions);
    if (data.citations && data.citations.length) answer.appendChild(renderSources(data.message_id, data.citations, data.votes));
    if (data.stale) markStale(data.message_id);
  }

  function failExchange(state, detail) {
    state.textEl.classList.remove("streaming");
    state.root.classList.add("failed");
    var answer = state.root.querySelector(".answer");
    var retry = el("button", {type: "button", "class": "link-button", text: "Try again"});
    retry.addEventListener("click", function () { ask(state.question); });
    answer.appendChild(el("p", {"class": "error-text", role: "alert"}, [document.createTextNode(detail + " "), retry]));
  }

  function markStale(messageId) {
    var root = exchangeFor(messageId);
    if (!root || root.classList.contains("stale")) return;
    root.classList.add("stale");
    var again = el("button", {type: "button", "class": "secondary", text: "Ask again"});
    again.addEventListener("click", function () { ask(root.dataset.question); });
    var banner = el("div", {"class": "stale-banner", role: "status"}, [
      el("span", {text: "A document this answer cites has changed since."}), again
    ]);
    root.querySelector(".answer").prepend(banner);
  }

  function addConversationLink(id, title) {
    var empty = conversationList.querySelector(".empty-list");
    if (empty) empty.remove();
    conversationList.querySelectorAll("a[aria-current]").forEach(function (a) { a.removeAttribute("aria-current"); });
    var link = el("a", {href: "/chat/" + id + "/", "aria-current": "page", title: title, text: title});
    conversationList.prepend(el("li", {}, [link]));
  }

  // --- Socket -------------------------------------------------------------------------------
  function socketUrl() {
    var scheme = location.protocol === "https:" ? "wss://" : "ws://";
    return scheme + location.host + "/ws/chat/" + (conversation ? "?conversation=" + conversation : "");
  }

  function connect() {
    socket = new WebSocket(socketUrl());
    socket.addEventListener("open", function () {
      retries = 0;
      form.classList.remove("offline");
      form.dataset.connected = "true";
      if (statusLine.dataset.kind === "connection") { setStatus(""); delete statusLine.dataset.kind; }
    });
    socket.addEventListener("message", function (event) { handle(JSON.parse(event.data)); });
    socket.addEventListener("close", function (event) {
      form.classList.add("offline");
      form.dataset.connected = "false";
      if (pending) { failExchange(pending, "The connection dropped before the answer finished."); pending = null; busy(false); }
      if (event.code === 4401 || event.code === 1006 && retries > 3) {
        statusLine.dataset.kind = "connection";
        setStatus("Cannot connect to the chat. Sign in again, or reload the page.", true);
      }
      var delay = Math.min(30000, 500 * Math.pow(2, retries++));
      setTimeout(connect, delay);
    });
  }

  function handle(message) {
    switch (message.type) {
      case "token":
        if (pending) {
          pending.textEl.textContent += message.text;
          scrollToEnd();
        }
        break;
      case "answer":
        if (pending) {
          completeExchange(pending, message);
          pending = null;
        }
        busy(false);
        if (conversation !== message.conversation) {
          conversation = message.conversation;
          history.replaceState(null, "", "/chat/" + conversation + "/");
          addConversationLink(conversation, message.question);
        }
        scrollToEnd();
        break;
      case "feedback_ack":
        thread.querySelectorAll('.vote[data-message-id="' + message.message_id + '"][data-chunk-id="' +
                                (message.chunk_id || "") + '"]').forEach(function (button) {
          button.setAttribute("aria-pressed", String(Number(button.dataset.rating) === message.rating));
        });
        var box = exchangeFor(message.message_id);
        box = box && box.querySelector('.comment-box[data-target="' + (message.chunk_id || "answer") + '"]');
        if (box && box.dataset.sent === "pending" && message.comment) {
          box.dataset.sent = "true";
          box.querySelector(".comment-status").textContent = "Thanks: your comment was saved with the vote.";
        }
        setStatus("Thanks, your vote was recorded.");
        break;
      case "stale":
        markStale(message.message_id);
        break;
      case "error":
        if (pending && message.about === "question" && message.status !== 429) {
          failExchange(pending, message.detail);
          if (message.message_id) pending.root.dataset.messageId = message.message_id;
          pending = null;
          busy(false);
        } else {
          setStatus(message.detail, true);
        }
        break;
    }
  }

  function send(payload) {
    if (!socket || socket.readyState !== WebSocket.OPEN) {
      setStatus("Not connected yet; trying again…", true);
      return false;
    }
    socket.send(JSON.stringify(payload));
    return true;
  }

  function sendFeedback(payload) {
    payload.type = "feedback";
    return send(payload);
  }

  // The sources asked within: the boxes ticked in the picker (none ticked: all of them).
  function chosenSources() {
    var boxes = document.querySelectorAll("#source-picker input[type=checkbox]:checked");
    return Array.prototype.map.call(boxes, function (box) { return Number(box.value); });
  }

  function busy(on) {
    sendButton.disabled = on;
    form.classList.toggle("busy", on);
  }

  function ask(question) {
    question = (question || "").trim();
    if (!question || pending) return;
    if (question.length > config.maxQuestionChars) {
      setStatus("The question is too long (" + question.length + " of " + config.maxQuestionChars + " characters).", true);
      return;
    }
    var sources = chosenSources();
    if (!send({type: "question", text: question, conversation: conversation, sources: sources.length ? sources : null})) return;
    setStatus("");
    pending = newExchange(question);
    busy(true);
    scrollToEnd();
  }

  // --- Input --------------------------------------------------------------------------------
  form.addEventListener("submit", function (event) {
    event.preventDefault();
    var question = input.value;
    if (!question.trim() || pending) return;
    ask(question);
    if (pending) { input.value = ""; grow(); }
  });
  input.addEventListener("keydown", function (event) {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      form.requestSubmit();
    }
  });
  function grow() {
    input.style.height = "auto";
    input.style.height = Math.min(input.scrollHeight, 200) + "px";
  }
  input.addEventListener("input", grow);

  function sidebar(open) {
    document.body.classList.toggle("sidebar-open", open);
    sidebarToggle.setAttribute("aria-expanded", String(open));
  }
  sidebarToggle.addEventListener("click", function () { sidebar(!document.body.classList.contains("sidebar-open")); });
  // On a phone the list covers the thread: a tap beside it, or Escape, closes it.
  document.getElementById("chat").addEventListener("click", function (event) {
    if (document.body.classList.contains("sidebar-open")) { event.preventDefault(); event.stopPropagation(); sidebar(false); }
  }, true);
  document.addEventListener("keydown", function (event) { if (event.key === "Escape") sidebar(false); });

  var picker = document.getElementById("source-picker");
  if (picker) {
    picker.addEventListener("change", function () {
      var names = Array.prototype.map.call(picker.querySelectorAll("input:checked"), function (box) {
        return box.parentNode.textContent.trim();
      });
      document.getElementById("source-picker-summary").textContent = names.length ? names.join(", ") : "all your sources";
    });
  }

  // --- Start --------------------------------------------------------------------------------
  initialThread.forEach(function (data) {
    var state = newExchange(data.question);
    if (data.failed) {
      state.root.dataset.messageId = data.message_id;
      state.textEl.classList.remove("streaming");
      state.textEl.textContent = data.text;
      failExchange(state, "This answer was cut off.");
    } else {
      state.textEl.textContent = data.text;
      completeExchange(state, data);
    }
  });
  scrollToEnd();
  connect();
  input.focus();
})();
