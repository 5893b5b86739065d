-- Fluent Bit Lua filter: mask personal data in every string value of a record before it leaves the node.
--
--   [FILTER]
--       Name   lua
--       Match  *
--       script /fluent-bit/scripts/redact_pii.lua
--       call   redact_pii
--
-- Masked (in this order, each span masked once):
--   e-mail addresses                         -> [EMAIL]
--   Chinese resident ID numbers (18 chars,   -> [ID]
--     date checked, ISO 7064 MOD 11-2 check character verified)
--   mainland China mobile numbers            -> [PHONE]
--     (1[3-9] + 9 digits, optional +86/86/0086 prefix, optional 3-4-4 grouping by spaces or dashes)
--   bank card numbers (13-19 digits, plain   -> [CARD]
--     or in groups of 4 separated by one space or dash, Luhn-valid)
--   extra patterns from REDACT_EXTRA (see below)
-- Digit-based matches never start or end inside a longer digit run. Keys are never changed.
--
-- Extra patterns: the file named by $REDACT_EXTRA_FILE, else redact_extra.lua next to this script
-- (/fluent-bit/scripts/redact_extra.lua when mounted by the fluent-bit chart), is loaded with dofile if present.
-- It sets  REDACT_EXTRA = { { pattern = "<Lua pattern>", replacement = "[X]" }, ... }  and is rendered by
-- infra/observability/fluentbit.py (render_extra_lua). Pure Lua 5.1 / LuaJIT, no libraries.
-- Note: the chart passes this file through Helm's tpl, so it must never contain two adjacent braces.

local find, sub, byte, gsub, concat = string.find, string.sub, string.byte, string.gsub, table.concat

local B_0, B_9, B_X, B_x = 48, 57, 88, 120

local function is_digit(b)
  return b ~= nil and b >= B_0 and b <= B_9
end

------------------------------------------------------------------------------------------------ check digits

local ID_WEIGHTS = { 7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2 }
local ID_CHECK = "10X98765432"

-- s[a .. a+17] is 17 digits and a check character; true when date and MOD 11-2 check character are right.
local function valid_id(s, a)
  local century = sub(s, a + 6, a + 7)
  if century ~= "18" and century ~= "19" and century ~= "20" then
    return false
  end
  local month = tonumber(sub(s, a + 10, a + 11))
  local day = tonumber(sub(s, a + 12, a + 13))
  if month < 1 or month > 12 or day < 1 or day > 31 then
    return false
  end
  local sum = 0
  for i = 1, 17 do
    sum = sum + (byte(s, a + i - 1) - B_0) * ID_WEIGHTS[i]
  end
  local want = byte(ID_CHECK, sum % 11 + 1)
  local got = byte(s, a + 17)
  if got == B_x then
    got = B_X
  end
  return got == want
end

-- Luhn over a string of digits.
local function luhn(digits)
  local sum, double = 0, false
  for i = #digits, 1, -1 do
    local d = byte(digits, i) - B_0
    if double then
      d = d * 2
      if d > 9 then
        d = d - 9
      end
    end
    sum = sum + d
    double = not double
  end
  return sum % 10 == 0
end

------------------------------------------------------------------------------------------------ e-mail

-- Characters allowed in the local part (conservative, so "user=a@b.cn" keeps "user=").
local LOCAL_CHAR = {}
for c in ("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._%+-"):gmatch(".") do
  LOCAL_CHAR[byte(c)] = true
end

-- Returns the masked string and the number of addresses masked. Linear: each '@' scans back at most
-- to the previous '@' (not a local-part character) and forward over one run of domain characters.
local function mask_emails(s)
  if not find(s, "@", 1, true) then
    return s, 0
  end
  local out, n, last, pos = {}, 0, 1, 1
  while true do
    local at = find(s, "@", pos, true)
    if not at then
      break
    end
    local a = at
    while a > last and LOCAL_CHAR[byte(s, a - 1)] do
      a = a - 1
    end
    while a < at and byte(s, a) == 46 do -- no leading dots
      a = a + 1
    end
    local _, de = find(s, "^[%w%.%-]+", at + 1)
    local matched = false
    if a < at and de then
      while de > at and (byte(s, de) == 46 or byte(s, de) == 45) do -- no trailing dot or dash
        de = de - 1
      end
      local domain = sub(s, at + 1, de)
      local tld = domain:match("%.(%a%a+)$")
      if tld and not find(domain, "..", 1, true) and byte(domain, 1) ~= 46 then
        out[#out + 1] = sub(s, last, a - 1)
        out[#out + 1] = "[EMAIL]"
        n = n + 1
        last = de + 1
        pos = de + 1
        matched = true
      end
    end
    if not matched then
      pos = at + 1
    end
  end
  if n == 0 then
    return s, 0
  end
  out[#out + 1] = sub(s, last)
  return concat(out), n
end

------------------------------------------------------------------------------------------------ digit runs

local PHONE_BODIES = { "1[3-9]%d%d%d%d%d%d%d%d%d", "1[3-9]%d[ %-]%d%d%d%d[ %-]%d%d%d%d" }
local PHONE_PREFIXES = { "0086[ %-]?", "86[ %-]?", "" }
local PHONE_AT_DIGIT = {} -- anchored patterns tried at the start of a digit run
for _, prefix in ipairs(PHONE_PREFIXES) do
  for _, body in ipairs(PHONE_BODIES) do
    PHONE_AT_DIGIT[#PHONE_AT_DIGIT + 1] = "^" .. prefix .. body
  end
end
local PHONE_AT_PLUS = {} -- tried at a '+' right before a digit run
for _, body in ipairs(PHONE_BODIES) do
  PHONE_AT_PLUS[#PHONE_AT_PLUS + 1] = "^%+86[ %-]?" .. body
end

-- Phone starting at a (digit run start, or the '+' before it); returns the end position or nil.
local function match_phone(s, a, patterns)
  for i = 1, #patterns do
    local _, e = find(s, patterns[i], a)
    if e and not is_digit(byte(s, e + 1)) then
      return e
    end
  end
  return nil
end

-- Card in groups of 4 starting at the digit run [a, b] (b - a == 3): returns the end position or nil.
-- At most 5 groups are read, so this is constant work per run.
local function match_grouped_card(s, a, b)
  local sep = byte(s, b + 1)
  if sep ~= 32 and sep ~= 45 then
    return nil
  end
  local digits, total, e = { sub(s, a, b) }, 4, b
  while total < 19 do
    if byte(s, e + 1) ~= sep or not is_digit(byte(s, e + 2)) then
      break
    end
    local ga, gb = find(s, "^%d+", e + 2)
    local len = gb - ga + 1
    if len > 4 or total + len > 19 then
      return nil -- part of a longer grouped number
    end
    digits[#digits + 1] = sub(s, ga, gb)
    total = total + len
    e = gb
    if len < 4 then
      break
    end
  end
  if total < 13 or #digits < 2 then
    return nil
  end
  if byte(s, e + 1) == sep and is_digit(byte(s, e + 2)) then
    return nil -- the grouping goes on past 19 digits
  end
  if luhn(concat(digits)) then
    return e
  end
  return nil
end

-- One left-to-right pass over the maximal digit runs; at each run: ID, then phone, then card.
local function mask_digits(s)
  local out, n, last, pos = {}, 0, 1, 1
  while true do
    local a, b = find(s, "%d+", pos)
    if not a then
      break
    end
    local len = b - a + 1
    local start, stop, label = a, nil, nil
    -- resident identity card number
    if len == 18 and valid_id(s, a) then
      stop, label = b, "[ID]"
    elseif len == 17 then
      local c = byte(s, b + 1)
      if (c == B_X or c == B_x) and not find(s, "^[%w_]", b + 2) and valid_id(s, a) then
        stop, label = b + 1, "[ID]"
      end
    end
    -- mobile phone number
    if not stop and len <= 15 then
      local e
      if a > last and byte(s, a - 1) == 43 then -- '+'
        e = match_phone(s, a - 1, PHONE_AT_PLUS)
        if e then
          start = a - 1
        end
      end
      e = e or match_phone(s, a, PHONE_AT_DIGIT)
      if e then
        stop, label = e, "[PHONE]"
      end
    end
    -- bank card number
    if not stop then
      if len >= 13 and len <= 19 then
        if luhn(sub(s, a, b)) then
          stop, label = b, "[CARD]"
        end
      elseif len == 4 then
        local e = match_grouped_card(s, a, b)
        if e then
          stop, label = e, "[CARD]"
        end
      end
    end
    if stop then
      out[#out + 1] = sub(s, last, start - 1)
      out[#out + 1] = label
      n = n + 1
      last = stop + 1
      pos = stop + 1
    else
      pos = b + 1
    end
  end
  if n == 0 then
    return s, 0
  end
  out[#out + 1] = sub(s, last)
  return concat(out), n
end

------------------------------------------------------------------------------------------------ extra patterns

local function script_dir()
  local info = debug and debug.getinfo and debug.getinfo(1, "S")
  local source = info and info.source or ""
  if sub(source, 1, 1) == "@" then
    local dir = source:match("^@(.*[/\\])")
    return dir or "./"
  end
  return "/fluent-bit/scripts/"
end

local function warn(msg)
  if io and io.stderr then
    io.stderr:write("[redact_pii] ", msg, "\n")
  end
end

local EXTRA = {}

local function load_extra()
  local path = os.getenv("REDACT_EXTRA_FILE")
  local explicit = path ~= nil and path ~= ""
  if not explicit then
    path = script_dir() .. "redact_extra.lua"
  end
  local f = io.open(path, "r")
  if not f then
    if explicit then
      warn("REDACT_EXTRA_FILE " .. path .. " cannot be read; no extra patterns")
    end
    return
  end
  f:close()
  local ok, err = pcall(dofile, path)
  if not ok then
    warn("cannot load " .. path .. ": " .. tostring(err))
    return
  end
  if type(REDACT_EXTRA) ~= "table" then
    warn(path .. " does not define the table REDACT_EXTRA")
    return
  end
  for i, entry in ipairs(REDACT_EXTRA) do
    local pattern = type(entry) == "table" and entry.pattern or nil
    local replacement = type(entry) == "table" and entry.replacement or nil
    if type(pattern) ~= "string" or pattern == "" or type(replacement) ~= "string" then
      warn("REDACT_EXTRA[" .. i .. "] needs string fields pattern and replacement; skipped")
    else
      local good, perr = pcall(find, "", pattern)
      if not good then
        warn("REDACT_EXTRA[" .. i .. "] bad Lua pattern " .. pattern .. ": " .. tostring(perr) .. "; skipped")
      else
        -- '%' is special in gsub replacements; the replacement is literal text.
        EXTRA[#EXTRA + 1] = { pattern = pattern, replacement = (gsub(replacement, "%%", "%%%%")) }
      end
    end
  end
end

load_extra()

------------------------------------------------------------------------------------------------ records

local function redact_string(s)
  local total, n = 0, 0
  s, n = mask_emails(s)
  total = total + n
  s, n = mask_digits(s)
  total = total + n
  for i = 1, #EXTRA do
    s, n = gsub(s, EXTRA[i].pattern, EXTRA[i].replacement)
    total = total + n
  end
  return s, total
end

local MAX_DEPTH = 64

local function walk(t, depth)
  if depth > MAX_DEPTH then
    return 0
  end
  local changed = 0
  for k, v in pairs(t) do
    local tv = type(v)
    if tv == "string" then
      local masked, n = redact_string(v)
      if n > 0 then
        t[k] = masked -- assigning an existing key during traversal is allowed
        changed = changed + n
      end
    elseif tv == "table" then
      changed = changed + walk(v, depth + 1)
    end
  end
  return changed
end

-- Fluent Bit entry point: 2 (record modified, timestamp kept) when anything was masked, else 0.
function redact_pii(tag, timestamp, record)
  if type(record) ~= "table" then
    return 0, timestamp, record
  end
  if walk(record, 1) > 0 then
    return 2, timestamp, record
  end
  return 0, timestamp, record
end

-- For tests and tools: mask one string; returns the masked string and the number of masked spans.
redact_pii_string = redact_string
