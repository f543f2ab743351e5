/** Who sees the Operations page: the people who run the installation, not only use it. */
export function isOperator(role: string): boolean {
  return role === "super_admin" || role === "admin";
}
