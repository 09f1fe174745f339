declare module 'asl-validator' {
  interface ValidationResult {
    isValid: boolean;
    errors: { message?: string; 'Error code'?: string; path?: string }[];
  }
  function validator(definition: unknown, options?: Record<string, unknown>): ValidationResult;
  export = validator;
}
