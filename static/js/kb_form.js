// The new knowledge base form: the slug follows the name (lowercase letters, digits, hyphens)
// until the operator edits the slug; emptying the slug lets it follow the name again.

export function slugify(text) {
  return text
    .normalize("NFKD")
    .replace(/[\u0300-\u036f]/g, "")
    .toLowerCase()
    .replace(/[^a-z0-9]+/g, "-")
    .replace(/^-+|-+$/g, "")
    .slice(0, 64)
    .replace(/-+$/, "");
}

const form = document.querySelector("form[data-kb-form]");
const nameInput = form?.querySelector("input[name=name]");
const slugInput = form?.querySelector("input[name=slug]");
if (nameInput && slugInput) {
  let following = slugInput.value === "" || slugInput.value === slugify(nameInput.value);
  nameInput.addEventListener("input", () => {
    if (following) slugInput.value = slugify(nameInput.value);
  });
  slugInput.addEventListener("input", () => {
    following = slugInput.value === "";
  });
}
